"""Webhook notifications for `routing.events`: what a hook receives (`payload`), which events
are news (`dedupe`), when a failed POST is tried again (`retry`), one POST with its timeout
(`webhook`), and the queues and workers that keep all of it off the request path (`notifier`).

Above `report` and below `cli`/`mitm` in the layers: it reads the rules and the event bus and
posts through ccswitch's own HTTP client; nothing below it knows it exists (emitters only
emit on the bus)."""
