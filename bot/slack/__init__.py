"""Slack surfaces, split by kind: commands, views (modal submissions), actions (buttons), home."""
