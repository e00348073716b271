"""Repositories: one module per aggregate, each running named queries from sql/."""
