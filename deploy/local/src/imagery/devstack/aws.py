"""The local S3+SQS endpoint (moto's server, speaking the AWS wire protocols over HTTP) and
the resources imagery needs on it: the bucket, the queue with its dead-letter queue and
redrive policy, the bucket -> queue notification for `s3:ObjectCreated:*` on `uploads/`, and
the lifecycle rules: `uploads/` expire after a day, `retained/` (the bytes of uploads that
failed for a reason that may not be the file's fault) after RETAINED_FAILED_DAYS.
`provision` is also what an SRE's infrastructure code must reproduce (docs/deploy.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import boto3

from imagery.devstack.procs import wait_for

LOCAL_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "imagery-local", "AWS_SECRET_ACCESS_KEY": "imagery-local"}
# SQS's highest. A message may come back many times without failing: deferred while its
# project has its share in flight, or waiting on another worker's claim. The poison guard is
# the record's attempt counter (PROCESSOR_MAX_ATTEMPTS), never the receive count.
MAX_RECEIVE_COUNT = 1000


@dataclass(frozen=True, slots=True)
class AwsResources:
    endpoint_url: str
    region: str
    bucket: str
    queue_url: str
    dlq_url: str
    events_topic_arn: str = ""
    events_queue_url: str = ""  # subscribed to the topic (raw delivery): where to read events


def start_moto(port: int, log_path: Path | None = None) -> subprocess.Popen[bytes]:
    with open(log_path or os.devnull, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def ready() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(
                f"the local S3/SQS server exited with {proc.returncode} (port {port} taken?)"
            )
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/", timeout=1):
                return True
        except OSError:
            return False

    wait_for(ready, f"local S3/SQS on 127.0.0.1:{port}")
    return proc


def provision(
    endpoint_url: str,
    *,
    region: str = "us-east-1",
    bucket: str = "imagery-local",
    queue: str = "imagery-uploads",
    max_receive_count: int = MAX_RECEIVE_COUNT,
    visibility_timeout: int = 60,
    retained_days: int = 7,
) -> AwsResources:
    session = boto3.session.Session(
        aws_access_key_id=LOCAL_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=LOCAL_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        region_name=region,
    )
    s3 = session.client("s3", endpoint_url=endpoint_url)
    sqs = session.client("sqs", endpoint_url=endpoint_url)
    if region == "us-east-1":
        s3.create_bucket(Bucket=bucket)
    else:
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region})
    s3.put_public_access_block(
        Bucket=bucket,
        PublicAccessBlockConfiguration={
            "BlockPublicAcls": True,
            "IgnorePublicAcls": True,
            "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True,
        },
    )
    s3.put_bucket_lifecycle_configuration(
        Bucket=bucket, LifecycleConfiguration={"Rules": lifecycle_rules(retained_days)}
    )
    dlq_url = sqs.create_queue(
        QueueName=f"{queue}-dlq", Attributes={"MessageRetentionPeriod": "1209600"}
    )["QueueUrl"]
    dlq_arn = _arn(sqs, dlq_url)
    queue_url = sqs.create_queue(
        QueueName=queue,
        Attributes={
            "VisibilityTimeout": str(visibility_timeout),
            "ReceiveMessageWaitTimeSeconds": "20",
            "RedrivePolicy": json.dumps(
                {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receive_count)}
            ),
        },
    )["QueueUrl"]
    queue_arn = _arn(sqs, queue_url)
    sqs.set_queue_attributes(
        QueueUrl=queue_url, Attributes={"Policy": _queue_policy(queue_arn, bucket)}
    )
    s3.put_bucket_notification_configuration(
        Bucket=bucket,
        NotificationConfiguration={
            "QueueConfigurations": [
                {
                    "QueueArn": queue_arn,
                    "Events": ["s3:ObjectCreated:*"],
                    "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "uploads/"}]}},
                }
            ]
        },
    )
    topic_arn, events_queue_url = provision_events(
        session, endpoint_url, f"{queue.removesuffix('-uploads')}-events"
    )
    return AwsResources(
        endpoint_url, region, bucket, queue_url, dlq_url, topic_arn, events_queue_url
    )


def provision_events(
    session: boto3.session.Session, endpoint_url: str, name: str
) -> tuple[str, str]:
    """The topic image events go to (the processor's EVENTS_TOPIC_ARN), and a queue of the
    same name subscribed to it with raw message delivery, as a team's consumer would be (a
    filter policy on `project_id` would take one project's events only)."""
    sns = session.client("sns", endpoint_url=endpoint_url)
    sqs = session.client("sqs", endpoint_url=endpoint_url)
    topic_arn = sns.create_topic(Name=name)["TopicArn"]
    queue_url = sqs.create_queue(QueueName=name)["QueueUrl"]
    queue_arn = _arn(sqs, queue_url)
    sqs.set_queue_attributes(
        QueueUrl=queue_url,
        Attributes={
            "Policy": json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Principal": {"Service": "sns.amazonaws.com"},
                            "Action": "sqs:SendMessage",
                            "Resource": queue_arn,
                            "Condition": {"ArnEquals": {"aws:SourceArn": topic_arn}},
                        }
                    ],
                }
            )
        },
    )
    sns.subscribe(
        TopicArn=topic_arn,
        Protocol="sqs",
        Endpoint=queue_arn,
        Attributes={"RawMessageDelivery": "true"},
    )
    return topic_arn, queue_url


def lifecycle_rules(retained_days: int) -> list[dict[str, object]]:
    """A safety net for uploads whose events were never processed (the processor deletes them
    normally), and the end of a failed upload's retained bytes (the processor's
    RETAINED_FAILED_DAYS, so `imagery-admin reprocess` never finds them gone early)."""
    return [
        {
            "ID": "expire-uploads",
            "Status": "Enabled",
            "Filter": {"Prefix": "uploads/"},
            "Expiration": {"Days": 1},
        },
        {
            "ID": "expire-retained",
            "Status": "Enabled",
            "Filter": {"Prefix": "retained/"},
            "Expiration": {"Days": retained_days},
        },
    ]


def _arn(sqs: object, queue_url: str) -> str:
    attrs = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])  # type: ignore[attr-defined]
    return str(attrs["Attributes"]["QueueArn"])


def _queue_policy(queue_arn: str, bucket: str) -> str:
    """Only the bucket may send to the queue (what production needs for S3 notifications)."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Service": "s3.amazonaws.com"},
                    "Action": "sqs:SendMessage",
                    "Resource": queue_arn,
                    "Condition": {"ArnLike": {"aws:SourceArn": f"arn:aws:s3:::{bucket}"}},
                }
            ],
        }
    )


def write_env_file(path: Path, values: dict[str, str]) -> None:
    """KEY=value lines, readable by the owner alone: they include the stack's API keys."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.chmod(0o600)
    lines = [f"{key}={value}" for key, value in values.items()]
    path.write_text(
        "# written by `make run`: the settings of the running local stack\n"
        + "\n".join(lines)
        + "\n"
    )


def create_distribution(endpoint_url: str, bucket: str, *, region: str = "us-east-1") -> str:
    """A CloudFront distribution in front of the bucket, on the local endpoint (moto records
    its invalidations): the processor's CLOUDFRONT_DISTRIBUTION_ID, which takedowns
    invalidate. The local edge (`edge.py`) serves the URLs; this is only the API's side."""
    session = boto3.session.Session(
        aws_access_key_id=LOCAL_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=LOCAL_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        region_name=region,
    )
    cloudfront = session.client("cloudfront", endpoint_url=endpoint_url)
    origin = f"{bucket}.s3.{region}.amazonaws.com"
    answer = cloudfront.create_distribution(
        DistributionConfig={
            "CallerReference": f"imagery-{bucket}",
            "Comment": f"imagery: {bucket}",
            "Enabled": True,
            "Origins": {
                "Quantity": 1,
                "Items": [
                    {
                        "Id": "bucket",
                        "DomainName": origin,
                        "S3OriginConfig": {"OriginAccessIdentity": ""},
                    }
                ],
            },
            "DefaultCacheBehavior": {
                "TargetOriginId": "bucket",
                "ViewerProtocolPolicy": "https-only",
                "TrustedKeyGroups": {"Enabled": False, "Quantity": 0},
                "MinTTL": 0,
                "ForwardedValues": {"QueryString": False, "Cookies": {"Forward": "none"}},
            },
        }
    )
    return str(answer["Distribution"]["Id"])
