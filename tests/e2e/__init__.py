"""A package, not a bare folder: pytest then ends this tier's package-scoped stack when the
tier ends. (For a folder without __init__.py, "package" scope lasts to the end of the
session: its servers kept running under every later tier.)"""
