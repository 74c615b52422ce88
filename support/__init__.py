"""Small neutral helpers every layer may use: API timestamps, and short DuckDB connections.
The ground floor, beside the registry: imports nothing of the product."""
