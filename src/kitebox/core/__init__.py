"""The pure decision core: no boto3, docker, subprocess, environ or clock in here.

Where is ...
- the job's identity read?            identity.py
- a repo URL turned into a slug?      slug.py
- an SSM node mapped to a variable?   names.py
- the ACL decided?                    acl.py
- admission (repository, branches)?   admission.py
- everything combined into a verdict? decision.py
"""
