"""Reporting reads the rollups the other apps keep (collection's event rollups,
metering's usage, revenue and cycle rollups); it stores nothing of its own yet."""
