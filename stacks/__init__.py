"""CDK stacks and constructs of sesrelay: one deployment per environment in cdk.json.

The modules mirror the runtime parts: ``network`` (the VPC), ``relay_service`` (NLB and
Fargate relay), ``spool`` (S3, SQS, DLQ), ``worker`` (the SES sender Lambda) and
``monitoring`` (dashboard and alarms); ``environment`` reads and validates the
environment settings and ``relay_stack`` puts the parts together.
"""
