"""Dataset fixtures (synthetic copies of DRIVE, STARE, CHASE_DB1 and a generic folder)."""
