"""HEAD an object on an S3-compatible endpoint and print its ETag and size as JSON. A multipart
upload's ETag ends in `-<number of parts>`.

Usage: s3_head.py ENDPOINT BUCKET KEY
"""
import json
import sys

import boto3

endpoint, bucket, key = sys.argv[1:4]
s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing",
                  aws_secret_access_key="testing", region_name="us-east-1")
head = s3.head_object(Bucket=bucket, Key=key)
print(json.dumps({"etag": head["ETag"].strip('"'), "size": head["ContentLength"]}))
