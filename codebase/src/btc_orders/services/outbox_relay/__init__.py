"""outbox_relay: publish the write model's outbox to RabbitMQ with publisher confirms."""
