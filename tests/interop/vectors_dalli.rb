# Placement vectors from Dalli's ring (Debian's ruby-dalli): the server each
# key maps to, as Dalli::Ring#server_for_key chooses it.
# Usage: ruby vectors_dalli.rb SERVERS [DOWN] < keys, one key a line; prints
# one server index (into SERVERS) a line. SERVERS: Dalli's own server strings,
# HOST:PORT[:WEIGHT] or a socket path. DOWN: index of a server whose alive?
# answers false, as a server Dalli has marked down does: the ring's failover
# then rehashes the key ("#{try}#{key}", up to 20 tries). Nothing is
# connected: alive? is answered here for every server.
require 'dalli'

servers = ARGV[0].split(',')
down = ARGV[1] ? Integer(ARGV[1]) : -1
ring = Dalli::Client.new(servers).send(:ring)
ring.servers.each_with_index do |s, i|
  dead = i == down
  s.define_singleton_method(:alive?) { !dead }
end
STDIN.each_line do |line|
  key = line.chomp
  puts ring.servers.index(ring.server_for_key(key))
end
