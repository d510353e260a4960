"""Copy a local directory to an S3-compatible bucket under a prefix, object for object (what
`aws s3 sync DIR s3://BUCKET/PREFIX` does): a lab moving a recording to object storage.

Usage: s3_upload.py ENDPOINT BUCKET PREFIX DIR
"""
import os
import sys

import boto3

endpoint, bucket, prefix, root = sys.argv[1:5]
s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing",
                  aws_secret_access_key="testing", region_name="us-east-1")
count = 0
for folder, _, files in os.walk(root):
    for name in files:
        path = os.path.join(folder, name)
        key = prefix.rstrip("/") + "/" + os.path.relpath(path, root).replace(os.sep, "/")
        s3.upload_file(path, bucket, key)
        count += 1
print("uploaded", count, "objects")
