#!/usr/bin/env python3
"""Finds import circles between the modules of each crate under services/ (a module uses
`crate::x::y`); prints each circle, exits 1 when there is one."""
import os
import re
import sys

root=sys.argv[1] if len(sys.argv)>1 else 'services'
bad=0
for crate in sorted(os.listdir(root)):
    src=os.path.join(root,crate,'src')
    if not os.path.isdir(src): continue
    mods={}
    for dp,_,fs in os.walk(src):
        for f in fs:
            if not f.endswith('.rs'): continue
            rel=os.path.relpath(os.path.join(dp,f),src)[:-3].replace(os.sep,'::')
            rel=re.sub(r'(::)?mod$','',rel)
            if rel in ('lib','main'): continue
            text=open(os.path.join(dp,f)).read()
            text=re.split(r'\n#\[cfg\(test\)\]',text)[0]
            code='\n'.join(l for l in text.split('\n') if not l.strip().startswith('//'))
            mods[rel]=set()
            for m in re.finditer(r'\bcrate::((?:[a-z_0-9]+::)*[a-z_0-9]+)',code):
                mods[rel].add(m.group(1))
    names=set(mods)
    def target(path):
        parts=path.split('::')
        for i in range(len(parts),0,-1):
            cand='::'.join(parts[:i])
            if cand in names: return cand
    g={m:{target(p) for p in ps}-{None,m} for m,ps in mods.items()}
    # a module's children don't count as a circle with it
    g={m:{t for t in ts if not t.startswith(m+'::') and not m.startswith(t+'::')} for m,ts in g.items()}
    seen=set()
    def dfs(n,stack):
        for t in g.get(n,()):
            if t in stack:
                cyc=stack[stack.index(t):]+[t]
                key=frozenset(cyc)
                if key not in seen:
                    seen.add(key); print(f'{crate}: '+' -> '.join(cyc))
            elif len(stack)<12: dfs(t,stack+[t])
    for m in g: dfs(m,[m])
    bad|=bool(seen)
sys.exit(1 if bad else 0)
