"""A real S3 API server on loopback for hgd's tests and benchmarks (PyPI `moto[server]`, pinned
in scripts/s3-venv.sh). It checks credentials: an IAM user with a key and a policy allowing S3
is made first (before authentication starts), and a bucket. Prints one JSON line
{"endpoint", "bucket", "access_key", "secret_key"} and serves until killed.

Usage: python server.py [PORT] [BUCKET]   (port 0: any free port)
"""

import json
import os
import sys

# The setup below takes exactly this many requests; every later one must be signed by a known
# key that a policy allows. Read by moto at import.
SETUP_REQUESTS = 4
os.environ["INITIAL_NO_AUTH_ACTION_COUNT"] = str(SETUP_REQUESTS)

import boto3  # noqa: E402
from moto.server import ThreadedMotoServer  # noqa: E402


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    bucket = sys.argv[2] if len(sys.argv) > 2 else "hgd-team"
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    anyone = dict(
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="setup",
        aws_secret_access_key="setup",
    )
    iam = boto3.client("iam", **anyone)
    iam.create_user(UserName="hgd")
    key = iam.create_access_key(UserName="hgd")["AccessKey"]
    iam.put_user_policy(
        UserName="hgd",
        PolicyName="s3",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
            }
        ),
    )
    boto3.client("s3", **anyone).create_bucket(Bucket=bucket)
    print(
        json.dumps(
            {
                "endpoint": endpoint,
                "bucket": bucket,
                "access_key": key["AccessKeyId"],
                "secret_key": key["SecretAccessKey"],
            }
        ),
        flush=True,
    )
    try:
        sys.stdin.read()  # until the parent closes stdin or kills us
    finally:
        server.stop()


if __name__ == "__main__":
    main()
