"""One thin module per verb: parse options, call a service, print the result."""
