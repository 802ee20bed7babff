"""moto_server with DynamoDB's per-item atomicity.

DynamoDB applies a conditional write atomically: of 20 concurrent conditional puts on one
item, exactly one succeeds ("Condition expressions", DynamoDB Developer Guide: a
conditional write succeeds only if the condition evaluates to true at the time of the
write). moto's threaded server checks the condition and stores the item as two steps
with no lock between them, so two racing writers can both win (seen in
connector-core's moto_adapters lease test). This launcher serializes moto's DynamoDB
write operations behind one lock, then runs moto_server unchanged.
"""

import functools
import sys
import threading

from moto.dynamodb.models import DynamoDBBackend
from moto.server import main

_WRITES = threading.RLock()


def _serialized(method):
    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        with _WRITES:
            return method(*args, **kwargs)

    return wrapper


for _name in ("put_item", "update_item", "delete_item", "transact_write_items"):
    setattr(DynamoDBBackend, _name, _serialized(getattr(DynamoDBBackend, _name)))

if __name__ == "__main__":
    sys.argv[0] = "moto_server"
    sys.exit(main())
