"""The saved model: its byte layout (stated once), the budgets it must meet, and the file format."""
