"""msgspec records: row structs (positional, frozen) and input structs (keyword-only)."""
