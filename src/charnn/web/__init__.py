"""What a browser shows: the self-contained pages (``pages``) and their templates (``templates/``)."""
