#!/usr/bin/env python3
"""Whole-process `hgd search --json -n 10` latency with work-tree watching on and off, with ripgrep
on the same folder alongside, rounds alternating so machine noise hits all three alike.

Each side runs its own daemon on its own copy of an index (made beforehand, e.g. by
bench/quality.sh): /tmp/lat-on and /tmp/lat-off. HGD_BIN must point at the binaries.

Usage: bench/watch_ab.py SEARCHED_FOLDER BENCHMARK_REPO_NAME ROUNDS
"""
import json,subprocess,time,os,statistics,sys
b=os.environ['HGD_BIN']+'/hgd'
cwd=sys.argv[1]; name=sys.argv[2]; rounds=int(sys.argv[3])
data=os.path.join(os.path.dirname(os.path.abspath(__file__)),'..','..','shared','bench','semble-dev')
qs=[a['query'] for a in json.load(open(os.path.join(data,'annotations',f'{name}.json')))]
sides={'watch on':dict(os.environ,HGD_HOME='/tmp/lat-on'),'watch off (walk per search)':dict(os.environ,HGD_HOME='/tmp/lat-off',HGD_WATCH='off')}
for env in sides.values(): subprocess.run([b,'index','.'],cwd=cwd,env=env,capture_output=True); subprocess.run([b,'search','--json','-n','10','warm up'],cwd=cwd,env=env,capture_output=True)
t={k:[] for k in sides}
rg=[]
for _ in range(rounds):
    for k,env in sides.items():
        for q in qs:
            s=time.perf_counter(); subprocess.run([b,'search','--json','-n','10',q],cwd=cwd,env=env,capture_output=True); t[k].append((time.perf_counter()-s)*1000)
    for q in qs:
        s=time.perf_counter(); subprocess.run(['rg','-i','-n','--json',q.split()[0],'.'],cwd=cwd,capture_output=True); rg.append((time.perf_counter()-s)*1000)
def pct(v,p): v=sorted(v); return v[min(len(v)-1,int(len(v)*p))]
for k,v in t.items(): print(f"| {k} | {len(v)} | {statistics.median(v):.1f} ms | {pct(v,.95):.1f} ms |")
print(f"| rg (first word of each query) | {len(rg)} | {statistics.median(rg):.1f} ms | {pct(rg,.95):.1f} ms |")
for env in sides.values(): subprocess.run([b,'stop'],env=env,capture_output=True)
