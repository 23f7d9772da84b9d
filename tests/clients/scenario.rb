# One scripted session of beaneater (Debian's ruby-beaneater) against a beanstalkd-protocol server
# on 127.0.0.1:PORT, printing a transcript in which job ids are replaced by J1, J2, ... (order of
# first appearance). tests/clients/test_clients.py compares the transcript from beanrouter with the
# one from the real beanstalkd. Usage: ruby scenario.rb PORT
require 'beaneater'

PORT = Integer(ARGV[0])
$ids = {}
def jid(id)
  id = Integer(id)
  $ids[id] ||= "J#{$ids.size + 1}"
end

def job(j)
  j.nil? ? 'null' : "#{jid(j.id)} #{j.body}"
end

def fields(stats, keys)
  keys.map { |k| v = stats[k.tr('-', '_')]; "#{k}=#{k == 'id' ? jid(v) : v}" }.join(' ')
end

def attempt(what)
  puts "#{what} #{yield}"
rescue Beaneater::UnexpectedResponse, Beaneater::NotConnected => e
  puts "#{what} #{e.class.name.split('::').last}"
end

def reserve(bs, timeout)
  bs.tubes.reserve(timeout)
rescue Beaneater::TimedOutError
  nil
end

JOB = %w[id tube state pri delay ttr reserves releases buries kicks timeouts]
TUBE = %w[name current-jobs-urgent current-jobs-ready current-jobs-reserved current-jobs-delayed
          current-jobs-buried total-jobs current-using current-watching cmd-delete cmd-pause-tube
          pause]

bs = Beaneater.new("127.0.0.1:#{PORT}")
emails = bs.tubes['emails']
a = emails.put('welcome', pri: 100, delay: 0, ttr: 60)
b = emails.put('digest', pri: 50, delay: 0, ttr: 60)
c = emails.put('later', pri: 10, delay: 3, ttr: 60)
puts "put #{a[:status]} #{jid(a[:id])} #{jid(b[:id])} #{jid(c[:id])}"
puts "used #{bs.tubes.used.name}"
bs.tubes.watch!('emails')
puts "watching #{bs.tubes.watched.map(&:name).join(',')}"
j = reserve(bs, 1)
puts "reserve #{job(j)}"
puts "stats-job #{fields(j.stats, JOB)}"
j.release(pri: 50, delay: 0)
j = reserve(bs, 1)
puts "reserve #{job(j)} attempts #{j.stats.reserves} releases #{j.stats.releases}"
j.touch
puts "delete #{j.delete[:status]}"
attempt('delete-again') { bs.jobs.find(j.id).nil? ? 'gone' : 'there' }
attempt('stats-job-gone') { bs.connection.transmit("stats-job #{j.id}")[:status] }

j = reserve(bs, 1)
puts "reserve #{job(j)}"
j.bury(pri: 7)
puts "peek-buried #{job(emails.peek(:buried))}"
puts "stats-job #{fields(j.stats, JOB)}"
puts "peek-delayed #{job(emails.peek(:delayed))}"
puts "peek-ready #{job(emails.peek(:ready))}"
puts "stats-tube #{fields(emails.stats, TUBE)}"
j.kick
puts "kicked #{fields(j.stats, %w[id state kicks])}"
puts "reserve-0 #{job(reserve(bs, 0))}"
puts "reserve-0 #{job(reserve(bs, 0))}"
puts "reserve-6 #{job(reserve(bs, 6))}"
puts "stats-tube #{fields(emails.stats, TUBE)}"

tubes = %w[alpha bravo charlie delta echo foxtrot]
[30, 10, 20, 10, 5, 30, 10, 20].each_with_index do |pri, n|
  t = tubes[n % tubes.size]
  r = bs.tubes[t].put("#{t}-#{pri}-#{n}", pri: pri, ttr: 60)
  puts "put #{t} #{jid(r[:id])}"
end
bs.tubes.watch!(*tubes)
puts "watching #{bs.tubes.watched.map(&:name).sort.join(',')}"
held = (1..8).map do
  j = reserve(bs, 1)
  puts "reserve #{job(j)}"
  j
end
puts "reserve-0 #{job(reserve(bs, 0))}"
held.each { |h| h.release(pri: 1, delay: 0) }
puts "peek-ready charlie #{job(bs.tubes['charlie'].peek(:ready))}"
puts "kick #{bs.tubes['charlie'].kick(10)[:id]}"
held.each(&:delete)

20.times do |i|
  q = Beaneater.new("127.0.0.1:#{PORT}")
  r = q.tubes['short'].put("short-#{i}", pri: 100 - (i % 3), ttr: 60)
  puts "short put #{jid(r[:id])}"
  q.close
end
bs.tubes.watch!('short')
20.times do
  j = reserve(bs, 1)
  puts "short reserve #{job(j)}"
  j.delete
end

w = Beaneater.new("127.0.0.1:#{PORT}")
bs.tubes['vanish'].put('orphan', pri: 1, ttr: 60)
w.tubes.watch!('vanish')
puts "worker reserve #{job(reserve(w, 1))}"
w.close
sleep 0.2
bs.tubes.watch!('vanish')
j = reserve(bs, 2)
puts "after vanish #{job(j)} #{fields(j.stats, %w[reserves releases])}"
j.delete

attempt('pause') { emails.pause(1)[:status] }
puts "stats-tube #{fields(emails.stats, %w[name cmd-pause-tube pause])}"
attempt('stats-tube-missing') { bs.tubes['nope'].stats.name }
attempt('peek-missing') { bs.jobs.find(999_999).inspect }
puts "tubes #{bs.tubes.all.map(&:name).sort.join(',')}"
s = bs.stats
puts "stats #{%w[current-jobs-ready current-jobs-reserved current-jobs-buried cmd-put cmd-reserve-with-timeout total-jobs].map { |k| "#{k}=#{s[k.tr('-', '_')]}" }.join(' ')}"
bs.close
puts 'done'
