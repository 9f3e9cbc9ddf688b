"""A private S3 bucket on 127.0.0.1 for the tests: moto's server in its access-control mode.

Usage: s3_store.py BUCKET [KEY FILE]... Starts moto on an ephemeral port with
INITIAL_NO_AUTH_ACTION_COUNT set, spends those unauthenticated actions on creating an IAM user
allowed to use BUCKET, its access key and the bucket, and from then on moto checks every
request's Signature V4 against that key; then stores each FILE's bytes as object KEY. Prints one JSON line (endpoint, access key id,
secret) and serves until stdin closes.
"""
import json
import os
import socket
import sys

# The first requests (this setup's) are free; every later one must be signed by a known key.
SETUP_ACTIONS = 4
os.environ["INITIAL_NO_AUTH_ACTION_COUNT"] = str(SETUP_ACTIONS)
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")

import boto3  # noqa: E402  (after the environment moto reads at import)
from moto.server import ThreadedMotoServer  # noqa: E402


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    bucket = sys.argv[1]
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    anonymous = dict(
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="setup",
        aws_secret_access_key="setup",
    )
    iam = boto3.client("iam", **anonymous)
    iam.create_user(UserName="shoal")
    policy = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
    }
    iam.put_user_policy(UserName="shoal", PolicyName="all", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName="shoal")["AccessKey"]
    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=key["AccessKeyId"],
        aws_secret_access_key=key["SecretAccessKey"],
    )
    s3.create_bucket(Bucket=bucket)
    seeds = sys.argv[2:]
    for name, path in zip(seeds[::2], seeds[1::2]):
        with open(path, "rb") as f:
            s3.put_object(Bucket=bucket, Key=name, Body=f.read())
    print(
        json.dumps(
            {
                "endpoint": endpoint,
                "access_key_id": key["AccessKeyId"],
                "secret_access_key": key["SecretAccessKey"],
            }
        ),
        flush=True,
    )
    sys.stdin.read()
    server.stop()


if __name__ == "__main__":
    main()
