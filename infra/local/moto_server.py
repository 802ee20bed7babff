"""moto_server with DynamoDB's per-item atomicity.

DynamoDB applies a conditional write atomically: of 20 concurrent conditional puts on one
item, exactly one succeeds ("Condition expressions", DynamoDB Developer Guide: a
conditional write succeeds only if the condition evaluates to true at the time of the
write). moto's threaded server checks the condition and stores the item as two steps
with no lock between them, so two racing writers can both win (seen in
connector-core's moto_adapters lease test). This launcher serializes moto's DynamoDB
write operations behind one lock, then runs moto_server unchanged.

moto 5.2.5 also backs up every table a TransactWriteItems touches with copy.deepcopy,
and a table with a stream holds every stream record written since it was created: each
transaction copied all of them, so time and memory grew with the square of the writes
(3,000 one-item transactions on a 50-item table: 7.3 GB and 164 s; the mail-sync suite
drove moto to 6 GB in 3 minutes and CI's moto was killed). The backup now shares the
stream and a rolled-back transaction drops the records it appended, which is what
DynamoDB shows: a cancelled transaction writes nothing, so it leaves no stream record
("TransactWriteItems": the actions are completed atomically, all or none; DynamoDB
Developer Guide, "Amazon DynamoDB Transactions: How it works", read 2026-12-06).
"""

import functools
import sys
import threading

from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.table import StreamShard
from moto.server import main

_WRITES = threading.RLock()


def _serialized(method):
    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        with _WRITES:
            return method(*args, **kwargs)

    return wrapper


def _stream_shared(transact_write_items):
    @functools.wraps(transact_write_items)
    def wrapper(self, transact_items, *args, **kwargs):
        shards = []
        for item in transact_items:
            op = next(iter(item.values()), {})
            table = self.tables.get(op.get("TableName"))
            if table is not None and table.stream_shard is not None:
                shards.append((table.stream_shard, len(table.stream_shard.items)))
        try:
            return transact_write_items(self, transact_items, *args, **kwargs)
        except BaseException:
            for shard, length in shards:
                del shard.items[length:]
            raise

    return wrapper


# The transaction's backup copy of a table keeps the one stream (see above).
StreamShard.__deepcopy__ = lambda self, memo: self
DynamoDBBackend.transact_write_items = _stream_shared(DynamoDBBackend.transact_write_items)

for _name in ("put_item", "update_item", "delete_item", "transact_write_items"):
    setattr(DynamoDBBackend, _name, _serialized(getattr(DynamoDBBackend, _name)))

if __name__ == "__main__":
    sys.argv[0] = "moto_server"
    sys.exit(main())
