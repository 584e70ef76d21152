"""Hardware abstraction layer: one interface per device role, real and simulated drivers."""
