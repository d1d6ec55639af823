"""The doors: REST API, queue handlers, chat handlers. Thin: parse, call one engine function, map."""
