"""create_buy_order: `PUT /buy_order`: validate, price, enforce the cap, store, emit the event."""
