package server

import "strconv"

func itoa(n int) string { return strconv.Itoa(n) }

func quote(b []byte) string { return strconv.QuoteToASCII(string(b)) }
