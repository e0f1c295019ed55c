"""The math: network, optimizer, schedules, compiled loops. No I/O; imports
nothing else of the package."""
