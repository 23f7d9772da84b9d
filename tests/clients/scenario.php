<?php
// One scripted session of pheanstalk (Debian's php-pda-pheanstalk) against a beanstalkd-protocol
// server on 127.0.0.1:PORT, printing a transcript in which job ids are replaced by J1, J2, ...
// (order of first appearance). tests/clients/test_clients.py compares the transcript from
// beanrouter with the one from the real beanstalkd. Usage: php scenario.php PORT
require '/usr/share/php/Pheanstalk/autoload.php';

use Pheanstalk\Contract\JobIdInterface;
use Pheanstalk\JobId;
use Pheanstalk\Pheanstalk;

$port = (int) $argv[1];
$ids = [];
function jid(int $id): string {
    global $ids;
    if (!isset($ids[$id])) { $ids[$id] = 'J' . (count($ids) + 1); }
    return $ids[$id];
}
function out(string $line): void { echo $line, "\n"; }
function job(?\Pheanstalk\Job $job): string {
    return $job === null ? 'null' : jid($job->getId()) . ' ' . $job->getData();
}
function fields($response, array $keys): string {
    $parts = [];
    foreach ($keys as $k) {
        $v = $response[$k];
        if ($k === 'id') { $v = jid((int) $v); }
        $parts[] = "$k=$v";
    }
    return implode(' ', $parts);
}
function attempt(string $what, \Closure $f): void {
    try { out("$what " . $f()); }
    catch (\Exception $e) { out("$what " . (new \ReflectionClass($e))->getShortName()); }
}
$JOB = ['id', 'tube', 'state', 'pri', 'delay', 'ttr', 'reserves', 'releases', 'buries', 'kicks', 'timeouts'];
$TUBE = ['name', 'current-jobs-urgent', 'current-jobs-ready', 'current-jobs-reserved',
         'current-jobs-delayed', 'current-jobs-buried', 'total-jobs', 'current-using',
         'current-watching', 'cmd-delete', 'cmd-pause-tube', 'pause'];

$p = Pheanstalk::create('127.0.0.1', $port);

// A Laravel-style worker: put, reserve, release (a failed attempt), reserve again, delete;
// attempts are counted with stats-job's reserves.
$p->useTube('emails');
out('used ' . $p->listTubeUsed(true));
$a = $p->put('welcome', 100, 0, 60);
$b = $p->put('digest', 50, 0, 60);
$c = $p->put('later', 10, 3, 60);
out('put ' . jid($a->getId()) . ' ' . jid($b->getId()) . ' ' . jid($c->getId()));
$p->watch('emails')->ignore('default');
out('watching ' . implode(',', $p->listTubesWatched(true)));
$j = $p->reserveWithTimeout(1);
out('reserve ' . job($j));
out('stats-job ' . fields($p->statsJob($j), $JOB));
$p->release($j, 50, 0);
$j = $p->reserveWithTimeout(1);
out('reserve ' . job($j));
out('attempts ' . $p->statsJob($j)['reserves'] . ' releases ' . $p->statsJob($j)['releases']);
$p->touch($j);
$p->delete($j);
attempt('delete-again', function () use ($p, $j) { $p->delete($j); return 'ok'; });
attempt('stats-job-gone', function () use ($p, $j) { return fields($p->statsJob($j), ['id']); });

$j = $p->reserveWithTimeout(1);
out('reserve ' . job($j));
$p->bury($j, 7);
out('peek-buried ' . job($p->peekBuried()));
out('stats-job ' . fields($p->statsJob($j), $JOB));
out('peek-delayed ' . job($p->peekDelayed()));
out('peek-ready ' . job($p->peekReady()));
out('stats-tube ' . fields($p->statsTube('emails'), $TUBE));
$p->kickJob($j);
out('kicked ' . fields($p->statsJob($j), ['id', 'state', 'kicks']));
out('reserve-0 ' . job($p->reserveWithTimeout(0)));  // the kicked job
out('reserve-0 ' . job($p->reserveWithTimeout(0)));  // the delayed one is not ready yet
out('reserve-6 ' . job($p->reserveWithTimeout(6)));  // ... until it is
out('stats-tube ' . fields($p->statsTube('emails'), $TUBE));

// Several tubes (on a cluster: on several shards), one worker watching them all: the most
// urgent job first, equal priorities oldest first.
$tubes = ['alpha', 'bravo', 'charlie', 'delta', 'echo', 'foxtrot'];
$n = 0;
foreach ([30, 10, 20, 10, 5, 30, 10, 20] as $pri) {
    $t = $tubes[$n % count($tubes)];
    $p->useTube($t);
    $job = $p->put("$t-$pri-$n", $pri, 0, 60);
    out("put $t " . jid($job->getId()));
    $n++;
}
$p->watchOnly('alpha');
foreach ($tubes as $t) { $p->watch($t); }
out('watching ' . implode(',', $p->listTubesWatched(true)));
$held = [];
for ($i = 0; $i < 8; $i++) {
    $j = $p->reserveWithTimeout(1);
    out('reserve ' . job($j));
    $held[] = $j;
}
out('reserve-0 ' . job($p->reserveWithTimeout(0)));
foreach ($held as $j) { $p->release($j, 1, 0); }
$p->useTube('charlie');
out('peek-ready charlie ' . job($p->peekReady()));
out('kick ' . $p->kick(10));
foreach ($held as $j) { $p->delete($j); }

// Short connections, PHP-FPM style: one connection per put, then one consumer drains.
for ($i = 0; $i < 20; $i++) {
    $q = Pheanstalk::create('127.0.0.1', $port);
    $q->useTube('short');
    $job = $q->put("short-$i", 100 - ($i % 3), 0, 60);
    out('short put ' . jid($job->getId()));
    unset($q);
}
$p->watchOnly('short');
for ($i = 0; $i < 20; $i++) {
    $j = $p->reserveWithTimeout(1);
    out('short reserve ' . job($j));
    $p->delete($j);
}

// A worker that vanishes holding a job: the job is ready again for the next one.
$w = Pheanstalk::create('127.0.0.1', $port);
$p->useTube('vanish');
$v = $p->put('orphan', 1, 0, 60);
$w->watchOnly('vanish');
$got = $w->reserveWithTimeout(1);
out('worker reserve ' . job($got));
unset($w);
gc_collect_cycles();
usleep(200000);
$p->watchOnly('vanish');
$j = $p->reserveWithTimeout(2);
out('after vanish ' . job($j) . ' ' . fields($p->statsJob($j), ['reserves', 'releases']));
$p->delete($j);

attempt('pause', function () use ($p) { $p->pauseTube('emails', 1); return 'ok'; });
out('stats-tube ' . fields($p->statsTube('emails'), ['name', 'cmd-pause-tube', 'pause']));
attempt('stats-tube-missing', function () use ($p) { return fields($p->statsTube('nope'), ['name']); });
attempt('peek-missing', function () use ($p) { return job($p->peek(new JobId(999999))); });
$tubes = $p->listTubes();
sort($tubes);
out('tubes ' . implode(',', $tubes));
out('done');
