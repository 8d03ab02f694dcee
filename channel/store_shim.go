package channel

// Store is the name channel.Channel takes in the rename landing on main.
// TEMPORARY (branch agent): deleted when main's rename is merged.
type Store = Channel
