"""The host <-> box protocol and the turn pipeline that runs one turn in a box."""
