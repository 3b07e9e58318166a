# Reads every key of a k2mc-mock --expect file back with Dalli (Debian's
# ruby-dalli): Dalli::Client.new(servers), its ring and defaults (failover
# on). Values k2mc wrote carry flags 0, which Dalli returns as raw strings.
# Usage: ruby read_dalli.rb SERVERS EXPECT [DOWN]
# SERVERS: Dalli's HOST:PORT[:WEIGHT],... DOWN: the index of a server that is
# not running: Dalli marks it down at its first failed connect
# (socket_max_failures) and its ring's failover rehashes the key; a first
# pass lets it notice, the second must find every key.
# Prints "found=N absent=N missing=N wrong=N"; exit 0 only if all is right.
require 'dalli'

servers, expect = ARGV[0].split(','), ARGV[1]
down = ARGV[2] ? Integer(ARGV[2]) : -1
Dalli.logger.level = Logger::ERROR
dc = Dalli::Client.new(servers, socket_timeout: 1, down_retry_delay: 600)
want = {}
File.foreach(expect) do |line|
  f = line.chomp.split(' ', 3)
  want[f[1]] = f[0] == 'S' ? f[2] : nil
end
get_all = lambda do
  got = {}
  want.each_key do |k|
    begin
      v = dc.get(k)
      got[k] = v unless v.nil?
    rescue Dalli::RingError
    end
  end
  got
end
get_all.call if down >= 0
got = get_all.call
found = absent = missing = wrong = 0
want.each do |k, v|
  g = got[k]
  if v.nil?
    g.nil? ? absent += 1 : wrong += 1
  elsif g.nil?
    missing += 1
  elsif g == v
    found += 1
  else
    wrong += 1
  end
end
puts "dalli: found=#{found} absent=#{absent} missing=#{missing} wrong=#{wrong}"
exit(found > 0 && missing.zero? && wrong.zero? ? 0 : 1)
