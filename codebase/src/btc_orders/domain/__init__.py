"""Pure domain code: money, orders, the cap. Imports nothing from frameworks or databases."""
