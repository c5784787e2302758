"""The SMTP relay that runs in the container: aiosmtpd with Postfix's relay policy, handing
each accepted message to the S3 + SQS spool before it answers 250."""
