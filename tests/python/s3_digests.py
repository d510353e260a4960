"""SHA-256 of every object under a prefix of an S3-compatible bucket, as JSON {key: digest} with
keys relative to the prefix.

Usage: s3_digests.py ENDPOINT BUCKET PREFIX [KEY]

With KEY, prints that object's body (KEY relative to PREFIX) instead.
"""
import hashlib
import json
import sys

import boto3

endpoint, bucket, prefix = sys.argv[1:4]
prefix = prefix.rstrip("/") + "/"
s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing",
                  aws_secret_access_key="testing", region_name="us-east-1")
if len(sys.argv) > 4:
    sys.stdout.write(s3.get_object(Bucket=bucket, Key=prefix + sys.argv[4])["Body"].read().decode())
    sys.exit(0)
digests = {}
for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
    for obj in page.get("Contents", []):
        body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
        digests[obj["Key"][len(prefix):]] = hashlib.sha256(body).hexdigest()
print(json.dumps(digests, sort_keys=True))
