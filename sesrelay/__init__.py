"""sesrelay: a serverless SMTP-to-Amazon-SES relay with Postfix relay semantics."""

__version__ = "0.1.0"
