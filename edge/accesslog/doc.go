// Package accesslog writes the edge's access log: one structured line
// per request, JSON or key=value text, appended to a file or stdout.
//
// The request's goroutine only copies a Record into a bounded queue
// ([Logger.Log]); one writer goroutine formats the records and writes
// them in batches, so a slow or stuck disk never blocks a request: when
// the queue is full the record is dropped and
// keyedge_edge_access_log_dropped_total counts it. [Logger.Reopen] reopens
// the file by its path, for logrotate (keyedge serve calls it on
// SIGUSR1).
//
// The formats are written by hand rather than through log/slog's
// handlers: for a record of two dozen fields those cost about six times
// as much CPU (bench/RESULTS.md, "Access log"), which alone would use up
// the log's budget of 5% of a keep-alive request.
//
// A record holds no secret: the path is logged without its query, which
// may carry credentials, and no header but Host is logged.
package accesslog
