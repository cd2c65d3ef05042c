"""The matching engine: pure functions and the trained model, no I/O (docs/linking.md)."""
