"""RabbitMQ: the topology (declared the same way by publisher and consumer) and connections.

- `buy_orders`: durable topic exchange; events are published with routing key
  `buy_order.created`.
- `read_model_sync`: durable quorum queue bound to it. Quorum queues are
  replicated when the broker is clustered, and their delivery limit sends a
  message that keeps killing its consumer to the dead letters instead of
  redelivering it forever. Dead-lettering is at-least-once, so a dead letter is
  never lost either.
- `read_model_sync.dead`: the dead-letter exchange (fanout) and its durable queue.
"""

import pika
from pika.adapters.blocking_connection import BlockingChannel

EXCHANGE = "buy_orders"
ROUTING_KEY = "buy_order.created"
QUEUE = "read_model_sync"
DEAD_LETTER_EXCHANGE = "read_model_sync.dead"
DEAD_LETTER_QUEUE = "read_model_sync.dead"
DELIVERY_LIMIT = 10

HEARTBEAT_SECONDS = 30
CONNECT_TIMEOUT_SECONDS = 5


def connect(amqp_url: str, name: str) -> pika.BlockingConnection:
    parameters = pika.URLParameters(amqp_url)
    parameters.heartbeat = HEARTBEAT_SECONDS
    parameters.blocked_connection_timeout = 60
    parameters.socket_timeout = CONNECT_TIMEOUT_SECONDS
    parameters.connection_attempts = 1
    parameters.client_properties = {"connection_name": name}
    return pika.BlockingConnection(parameters)


def declare_topology(channel: BlockingChannel) -> None:
    """Idempotent: every publisher and consumer declares the same things at start."""
    channel.exchange_declare(EXCHANGE, exchange_type="topic", durable=True)
    channel.exchange_declare(DEAD_LETTER_EXCHANGE, exchange_type="fanout", durable=True)
    channel.queue_declare(DEAD_LETTER_QUEUE, durable=True, arguments={"x-queue-type": "quorum"})
    channel.queue_bind(DEAD_LETTER_QUEUE, DEAD_LETTER_EXCHANGE)
    channel.queue_declare(
        QUEUE,
        durable=True,
        arguments={
            "x-queue-type": "quorum",
            "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE,
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",  # required by at-least-once dead-lettering
            "x-delivery-limit": DELIVERY_LIMIT,
        },
    )
    channel.queue_bind(QUEUE, EXCHANGE, routing_key=ROUTING_KEY)
