"""The `clipforge` command line: parse, call a library function, print."""
