package fuzz

import (
	"testing"
	"time"

	"github.com/sluicehq/sluice/config"
)

// FuzzConfig parses crafted configuration files. Parse must not panic;
// errors must carry text.
func FuzzConfig(f *testing.F) {
	f.Add(config.Default)
	f.Add(`agent.channels = c1 c2
agent.channels.c1.type = file
agent.channels.c1.dataDirs = /disk1/sluice,/disk2/sluice
agent.channels.c1.checkpointDir = /disk1/sluice-checkpoint
agent.channels.c1.capacity = 1000000
agent.channels.c1.transactionCapacity = 10000
agent.channels.c2.type = memory
agent.channels.c2.capacity = 100
sluice.server.grpc.address = 127.0.0.1:7070
`)
	f.Add("agent.channels = c1\nagent.channels.c1.type = org.apache.flume.channel.file.FileChannel\nagent.channels.c1.capacity = -1\n")
	f.Add("agent.channels = c1\nagent.channels.c1.type = memory\nagent.channels.c1.capacity = 99999999999999999999999\n")
	f.Add("key\\\n  continued = value \\u00e9\\\n# comment\n! bang\n=\n:\\")
	f.Add("agent.channels = c1 c1\nagent.channels.c1.type = bogus\n")
	f.Add("")
	f.Fuzz(func(t *testing.T, data string) {
		defer watchdog("FuzzConfig", 5*time.Second)()
		if _, err := config.ParseProperties(data); err != nil && err.Error() == "" {
			t.Fatal("ParseProperties: empty error text")
		}
		if _, err := config.Parse("fuzz.conf", data, config.DefaultAgent, quietLogger()); err != nil && err.Error() == "" {
			t.Fatal("Parse: empty error text")
		}
	})
}
