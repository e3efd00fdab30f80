"""Moving in from the Go "Chat Group Server": `chat-group import-go` (see `run`).

`run` goes through the phases; `policy` decides users (`users`), channels and
memberships (`channels`) over the rows of `rows`; `messages` copies the
history with `bodies` and `ids`; `redis_state` keeps Redis in step; `report`
and `progress` say what happens; `command` is the command line. The SQL lives
in `shared.db.go_source` (the Go database) and `shared.db.go_import` (this one).
"""
