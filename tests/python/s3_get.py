"""Download one object from an S3-compatible endpoint to a local file.

Usage: s3_get.py ENDPOINT BUCKET KEY FILE
"""
import sys

import boto3

endpoint, bucket, key, path = sys.argv[1:5]
s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing",
                  aws_secret_access_key="testing", region_name="us-east-1")
s3.download_file(bucket, key, path)
