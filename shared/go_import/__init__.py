"""Moving in from the Go "Chat Group Server": `chat-group import-go` (see `run`).

`run` goes through the phases, `policy` decides users, channels and
memberships, `messages` copies the history with `bodies` and `ids`,
`redis_state` keeps Redis in step, `report` and `progress` say what happens.
The SQL lives in `shared.db.go_source` (the Go database) and
`shared.db.go_import` (this one).
"""
