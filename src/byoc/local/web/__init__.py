"""The demo web page (index.html) and its development server (`byoc lambda-local`)."""
