"""Prefect flows of the RARE pipeline (composition only)."""
