package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/sluicehq/sluice/crypto"
)

// runKeygen writes a new key file or appends a key to one. It prints the new
// key's id on stdout, never the key.
func runKeygen(args []string) int {
	flags := newFlagSet("keygen", "--key-file FILE [--new]")
	var keyFile string
	var create bool
	flags.StringVar(&keyFile, "key-file", "", "key `file` to append a new key to (created with mode 0600 if missing)")
	flags.BoolVar(&create, "new", false, "write a new key file holding one key (id 1); refuses to replace an existing file")
	if rc := parseFlags(flags, args); rc >= 0 {
		return rc
	}
	if keyFile == "" {
		fmt.Fprintln(os.Stderr, "sluice keygen: --key-file is required")
		flags.Usage()
		return 2
	}
	var key crypto.Key
	if create {
		// Replacing a key file would lose the keys that sealed stored data.
		if _, err := os.Lstat(keyFile); err == nil {
			fmt.Fprintf(os.Stderr, "sluice keygen: %s already exists; without --new a key is appended to it\n", keyFile)
			return 1
		} else if !errors.Is(err, fs.ErrNotExist) {
			fmt.Fprintf(os.Stderr, "sluice keygen: %v\n", err)
			return 1
		}
		secret, err := crypto.GenerateKey()
		if err != nil {
			fmt.Fprintf(os.Stderr, "sluice keygen: %v\n", err)
			return 1
		}
		key = crypto.Key{ID: 1, Secret: secret}
		if err := crypto.WriteKeyFile(keyFile, []crypto.Key{key}); err != nil {
			fmt.Fprintf(os.Stderr, "sluice keygen: %v\n", err)
			return 1
		}
	} else {
		var err error
		if key, err = crypto.AppendKey(keyFile); err != nil {
			fmt.Fprintf(os.Stderr, "sluice keygen: %v\n", err)
			return 1
		}
	}
	fmt.Println(key.ID)
	fmt.Fprintf(os.Stderr, "sluice keygen: added key %d to %s; to seal new data with it set encryption.activeKey = %d and reload (SIGHUP) or restart\n",
		key.ID, keyFile, key.ID)
	return 0
}
