"""``srw-clip eval``: zero-shot top-1/top-5 of students and teacher (Table 5) and Table 4's bands."""
