#!/usr/bin/env python3
"""A webhook receiver's side for the tests, written against PyPI's
`standardwebhooks` (the Standard Webhooks reference library), so what
confab signs is judged by code that is not confab's.

  webhook_check.py < {"secret": "whsec_...", "deliveries": [{"headers": {...}, "body": "..."}]}
      -> [payload, ...]   (each body as the library parsed it, in order)

Any delivery that does not verify exits non-zero with the reason.
"""
import json
import sys

from standardwebhooks import Webhook, WebhookVerificationError


def main():
    req = json.load(sys.stdin)
    wh = Webhook(req["secret"])
    out = []
    for i, d in enumerate(req["deliveries"]):
        try:
            out.append(wh.verify(d["body"], d["headers"]))
        except WebhookVerificationError as e:
            sys.exit(f"delivery {i} ({d['headers'].get('webhook-id')}): {e}")
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
