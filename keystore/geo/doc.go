// Package geo restricts where a private key may be used. A node (an edge
// or a key server) has attributes, such as "region: eu, country: de,
// dc: fra1"; a key has a policy over attributes, such as
// "region: eu and not country: ru". A secret sealed under a policy with
// ciphertext-policy attribute-based encryption (CP-ABE, circl's tkn20)
// opens only with a NodeKey whose attributes satisfy the policy, so a
// node outside the policy cannot open the key even with the file in hand.
//
// The MasterKey, held by keyctl and never by an edge node, issues
// NodeKeys and can open every sealed secret, so an operator can move a
// key from one policy to another. Params is its public half: anyone
// holding it can seal, nobody can open with it.
//
// Policies follow tkn20's language: "attr: value" literals combined with
// and, or, not and parentheses. Names and values are letters, digits and
// underscores, compared case-insensitively. A negated literal such as
// "not country: us" admits nodes that declare a country other than us;
// like every literal, it needs the node to declare the attribute, so a
// node with no country attribute is not admitted.
package geo
