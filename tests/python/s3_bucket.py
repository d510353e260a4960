"""Create a bucket on an S3-compatible endpoint (the moto server in tests).

Usage: s3_bucket.py ENDPOINT BUCKET
"""
import sys

import boto3

endpoint, bucket = sys.argv[1:3]
s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing",
                  aws_secret_access_key="testing", region_name="us-east-1")
s3.create_bucket(Bucket=bucket)
print("created", bucket)
