"""Operator commands: ACLs as code (`sizer acls apply`), operator controls (`sizer control`), the console (`sizer publish`, `sizer tail`), the portfolio view (`sizer status`)."""
