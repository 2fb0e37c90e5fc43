"""migration: apply the yoyo migrations to both databases, then exit 0."""
