"""`evsed fleet`: many simulated chargers in one asyncio process, for CSMS load tests."""
