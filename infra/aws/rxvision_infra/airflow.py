"""Optional managed Airflow (Amazon MWAA), behind ``-c mwaa=true``.

MWAA runs only inside a VPC (two private subnets in different zones and a security group
that lets its components reach each other), reads DAGs from a versioned S3 bucket, and
runs its workers as an execution role. That role is the Airflow worker role of the main
stack: on MWAA the workers *are* the Airflow workers, so they assume the training and
scoring roles exactly as self-managed workers do. This stack adds to it, in a separate
policy, only what MWAA's own machinery needs (DAGs bucket, its log groups, its Celery
queues, its metrics).
"""

from __future__ import annotations

from aws_cdk import Aws, CfnOutput, CfnParameter, Duration, RemovalPolicy, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_mwaa as mwaa
from aws_cdk import aws_s3 as s3
from constructs import Construct

from rxvision_infra.compliance import skip_cfn_lint, skip_checkov
from rxvision_infra.config import InfraConfig
from rxvision_infra.roles import statement
from rxvision_infra.storage import access_log_bucket

DAGS_PREFIX = "dags"
LOG_MODULES = ("dag_processing", "scheduler", "task", "webserver", "worker")


class MwaaStack(Stack):
    """The VPC, DAGs bucket, execution permissions and the MWAA environment."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        config: InfraConfig,
        worker_role: iam.Role,
        **kwargs: object,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)  # type: ignore[arg-type]
        self.env_name = f"{config.name_prefix}-airflow"
        airflow_version = CfnParameter(
            self,
            "AirflowVersion",
            type="String",
            default=config.mwaa_airflow_version,
            description="Apache Airflow version of the MWAA environment (one MWAA supports)",
        )
        # one bucket for the access logs of the DAGs bucket and the VPC's flow logs
        self.log_bucket = access_log_bucket(self, "Logs", None)
        self.vpc = network(self, self.log_bucket)
        self.security_group = security_group(self, self.vpc)
        self.dags_bucket = dags_bucket(self, config, self.log_bucket)
        self.execution_policy = iam.Policy(
            self,
            "MwaaExecutionPolicy",
            roles=[worker_role],
            statements=execution_statements(self.env_name, self.dags_bucket),
        )
        self.airflow = mwaa.CfnEnvironment(
            self,
            "Environment",
            name=self.env_name,
            airflow_version=airflow_version.value_as_string,
            execution_role_arn=worker_role.role_arn,
            source_bucket_arn=self.dags_bucket.bucket_arn,
            dag_s3_path=DAGS_PREFIX,
            environment_class="mw1.small",
            max_workers=2,
            # the web server is reached through the VPC (VPN or bastion), never the internet
            webserver_access_mode="PRIVATE_ONLY",
            network_configuration=mwaa.CfnEnvironment.NetworkConfigurationProperty(
                security_group_ids=[self.security_group.security_group_id],
                subnet_ids=self.vpc.select_subnets(
                    subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS
                ).subnet_ids,
            ),
            logging_configuration=logging_configuration(),
        )
        # MWAA checks its permissions while it creates the environment
        self.airflow.node.add_dependency(self.execution_policy)
        CfnOutput(self, "DagsBucketName", value=self.dags_bucket.bucket_name)
        CfnOutput(self, "EnvironmentName", value=self.env_name)


def network(scope: Construct, log_bucket: s3.IBucket) -> ec2.Vpc:
    """A two-zone VPC: private subnets for MWAA, public ones only for the single NAT
    gateway that lets workers reach S3, ECR, CloudWatch and PyPI. Flow logs go to S3
    (SSE-S3, lifecycle-expired) rather than a log group that would need its own KMS key."""
    vpc = ec2.Vpc(
        scope,
        "Vpc",
        ip_addresses=ec2.IpAddresses.cidr("10.42.0.0/16"),
        max_azs=2,
        nat_gateways=1,
        subnet_configuration=[
            ec2.SubnetConfiguration(name="public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=24),
            ec2.SubnetConfiguration(
                name="private", subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS, cidr_mask=20
            ),
        ],
    )
    vpc.add_flow_log(
        "FlowLog", destination=ec2.FlowLogDestination.to_s3(log_bucket, "vpc-flow-logs/")
    )
    annotate_default_sg_restrictor(Stack.of(scope))
    return vpc


def annotate_default_sg_restrictor(stack: Stack) -> None:
    """Explain the findings on CDK's own custom resource that strips the VPC's default
    security group of its rules (feature flag ``restrictDefaultSecurityGroup``): a Lambda
    function CDK writes, which CloudFormation calls once per deploy."""
    provider = stack.node.try_find_child("Custom::VpcRestrictDefaultSGCustomResourceProvider")
    if provider is None:  # the flag is off: no custom resource, nothing to explain
        return
    handler = provider.node.find_child("Handler")
    skip_checkov(
        handler,
        {
            "CKV_AWS_115": "CDK's deploy-time handler, invoked by CloudFormation once per "
            "deploy: a concurrency limit would only make deploys fail.",
            "CKV_AWS_116": "Invoked synchronously by CloudFormation, which records and reports "
            "its failure; a dead-letter queue would never receive anything.",
            "CKV_AWS_117": "It calls only the EC2 API to revoke the default security group's "
            "rules; running it inside the VPC it edits would add a NAT dependency for nothing.",
        },
    )
    skip_cfn_lint(
        handler,
        {
            "W3005": "CDK's generated handler names its role both in DependsOn and GetAtt; "
            "redundant, harmless, and not our code to change.",
        },
    )


def security_group(scope: Construct, vpc: ec2.IVpc) -> ec2.SecurityGroup:
    """MWAA's components talk to each other on any port; nothing else may come in."""
    group = ec2.SecurityGroup(
        scope,
        "MwaaSecurityGroup",
        vpc=vpc,
        description="RxVision MWAA: traffic between the components of the environment",
        allow_all_outbound=True,
    )
    group.add_ingress_rule(group, ec2.Port.all_traffic(), "MWAA components among themselves")
    return group


def dags_bucket(scope: Construct, config: InfraConfig, log_bucket: s3.IBucket) -> s3.Bucket:
    """The versioned bucket MWAA reads DAGs (and requirements) from. Its name starts with
    ``airflow-`` as MWAA's documentation asks; account and region keep it unique."""
    return s3.Bucket(
        scope,
        "DagsBucket",
        bucket_name=f"airflow-{config.name_prefix}-dags-{Aws.ACCOUNT_ID}-{Aws.REGION}",
        encryption=s3.BucketEncryption.S3_MANAGED,
        block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
        enforce_ssl=True,
        versioned=True,
        object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
        server_access_logs_bucket=log_bucket,
        server_access_logs_prefix="dags/",
        removal_policy=RemovalPolicy.RETAIN,
        lifecycle_rules=[
            s3.LifecycleRule(
                id="versions-and-multipart",
                noncurrent_version_expiration=Duration.days(30),
                abort_incomplete_multipart_upload_after=Duration.days(1),
            )
        ],
    )


def execution_statements(env_name: str, dags: s3.IBucket) -> list[iam.PolicyStatement]:
    """What MWAA itself needs from its execution role (AWS's documented policy, with each
    action named). Three actions accept no resource but ``*`` and carry conditions or are
    read-only; the Celery queues live in an AWS-owned account, hence ``*`` there."""
    region, account, partition = Aws.REGION, Aws.ACCOUNT_ID, Aws.PARTITION
    log_groups = f"arn:{partition}:logs:{region}:{account}:log-group:airflow-{env_name}-*"
    metrics = statement("PutMetrics", ["cloudwatch:PutMetricData"], ["*"])
    metrics.add_condition("StringEquals", {"cloudwatch:namespace": "AmazonMWAA"})
    kms = iam.PolicyStatement(
        sid="CeleryQueueEncryption",
        actions=["kms:Decrypt", "kms:DescribeKey", "kms:GenerateDataKey", "kms:Encrypt"],
        # AWS-owned key of MWAA's queues: any key but this account's, used through SQS only
        not_resources=[f"arn:{partition}:kms:*:{account}:key/*"],
        conditions={"StringLike": {"kms:ViaService": [f"sqs.{region}.amazonaws.com"]}},
    )
    return [
        statement(
            "PublishMetrics",
            ["airflow:PublishMetrics"],
            [f"arn:{partition}:airflow:{region}:{account}:environment/{env_name}"],
        ),
        statement("ListDags", ["s3:ListBucket", "s3:GetBucketLocation"], [dags.bucket_arn]),
        statement("ReadDags", ["s3:GetObject", "s3:GetObjectVersion"], [dags.arn_for_objects("*")]),
        statement("CheckPublicAccessBlock", ["s3:GetAccountPublicAccessBlock"], ["*"]),
        statement(
            "WriteLogs",
            [
                "logs:CreateLogStream",
                "logs:CreateLogGroup",
                "logs:PutLogEvents",
                "logs:GetLogEvents",
                "logs:GetLogRecord",
                "logs:GetLogGroupFields",
                "logs:GetQueryResults",
            ],
            [log_groups],
        ),
        statement("DescribeLogGroups", ["logs:DescribeLogGroups"], ["*"]),
        metrics,
        statement(
            "CeleryQueues",
            [
                "sqs:ChangeMessageVisibility",
                "sqs:DeleteMessage",
                "sqs:GetQueueAttributes",
                "sqs:GetQueueUrl",
                "sqs:ReceiveMessage",
                "sqs:SendMessage",
            ],
            [f"arn:{partition}:sqs:{region}:*:airflow-celery-*"],
        ),
        kms,
    ]


def logging_configuration() -> mwaa.CfnEnvironment.LoggingConfigurationProperty:
    """Every MWAA log module on, at INFO: the on-call engineer reads task logs there."""
    module = mwaa.CfnEnvironment.ModuleLoggingConfigurationProperty(enabled=True, log_level="INFO")
    return mwaa.CfnEnvironment.LoggingConfigurationProperty(
        **{f"{name}_logs": module for name in LOG_MODULES}  # type: ignore[arg-type]
    )
